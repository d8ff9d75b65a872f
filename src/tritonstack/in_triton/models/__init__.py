"""Python-backend model code that export copies into the repository."""
