"""The ground floor: errors users can act on, atomic files and folder swaps, crash injection for the tests.

Nothing here imports the rest of hftl.
"""
