"""Transport-free domain rules: run states, risk, policy, roles, errors. No grpc imports here."""
