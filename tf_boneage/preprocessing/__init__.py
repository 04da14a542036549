"""Preprocessing of the paper, in TensorFlow ops shared by training-data preparation and the
exported serving graph: mask cleanup (``mask``), contrast (``contrast``), landmark-based
registration (``registration``) with a gather-based warp (``warp``), regions A/B/C
(``regions``); ``pose`` maps 21-point hand poses to the paper's landmarks offline."""
