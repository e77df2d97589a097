"""Model parts, all operations on the layer map: the traced forward pass (`layer_trace`), the map (`layer_map`),
`keep_blocks` (`truncation`), the strategies (`strategies/`), parameter groups and the schedule (`optimization`),
a regression head's target scaling, and loading a model with a new head (`loading`).
"""
