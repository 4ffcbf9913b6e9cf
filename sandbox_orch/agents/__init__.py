"""What agents do inside their sandboxes: their event streams read live, the usage they
add up to (tokens, cache, tools, turns, cost), the budgets that bound it, the settings
a node gives them, and configs from other tools (zen) brought over as workflows."""
