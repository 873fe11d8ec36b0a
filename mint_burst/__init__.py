"""mint-burst."""
