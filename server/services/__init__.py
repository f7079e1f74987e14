"""Domain services: one method per operation, transport-free. They open the transactions."""
