"""Crisis broadcasts: tiers, audiences, payloads of the broadcast workflows."""
