"""Local stand-ins for the outside services kwx talks to (this machine cannot reach the real ones)."""
