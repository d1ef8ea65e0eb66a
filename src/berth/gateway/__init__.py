"""The gateway: an asyncio reverse proxy in front of every replica process."""
