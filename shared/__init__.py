"""What the three leadrelay services share: settings, event contracts, database and Kafka plumbing.

Nothing here knows about a particular service; each service builds on these pieces and owns
its own tables, topics and decisions.
"""
