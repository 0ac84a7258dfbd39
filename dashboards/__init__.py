"""The Streamlit dashboard: a thin shell over sim and experiments (design.md §1); it arrives with its own issue."""
