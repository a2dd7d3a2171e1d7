"""What the agent keeps on disk: process records, the event journal, process logs."""
