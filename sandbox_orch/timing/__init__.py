"""Starting later: `run --start-at` (a clock time or a delay, waited for with a
countdown), and spreading node starts (`start_delay`, `run --stagger`)."""
