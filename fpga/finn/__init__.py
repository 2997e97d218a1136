"""FINN's side of the graph: op specs, boards, the cost model, folding, memory, the FINN folder."""
