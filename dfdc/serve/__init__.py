"""`dfdc serve`: a trained detector over HTTP (a JSON API and one web page)."""
