"""stormsim's model: scenario schema and loader, the SimPy components, and the definitions of every output."""
