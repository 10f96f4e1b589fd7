"""``POST /feedback``'s side of the feedback store: what is accepted (:mod:`.intake`) and how it
is written (:mod:`.store`). The layout itself is :mod:`artifacts.feedback`, shared with training."""
