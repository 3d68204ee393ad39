"""Dataset layouts (DFDC, FaceForensics++) -> one index; the built-in sample generator."""
