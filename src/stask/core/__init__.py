"""Workers, task contexts, discovery and the Stask facade."""
