"""mint-poll."""
