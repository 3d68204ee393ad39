"""Faces: the MTCNN detector, tracks, crop geometry."""
