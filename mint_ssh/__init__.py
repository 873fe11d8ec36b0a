"""mint-ssh."""
