"""The packet router: forwards between the agents of a session."""
