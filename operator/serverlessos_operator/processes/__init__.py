"""ServerlessProcesses: the books, and the controllers that start, resize, delete,
watch and evacuate them."""
