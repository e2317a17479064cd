"""stickgen: text to 10-second stick-figure animation, with mocap preprocessing, training and
serving on Ray. Stages, in the order data flows: motion -> text -> model -> data -> train ->
generate -> render -> serve -> eval."""

__version__ = "0.1.0"
