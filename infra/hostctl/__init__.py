"""Process control for the local backend: nothing else starts a server process."""
