"""`bench plan`: will a technique fit, how long, at what cost, for any model, before a GPU is rented.

The memory plan comes from running the model's own code, not from a formula per family: the model is built
from its config alone on the meta device, turned into the technique's model by the same code `bench run` uses
(`bench.models.build.assemble`), its tensors made fake (shapes and dtypes, no storage), and two training steps run
under torch's FakeTensorMode with the same tensor accounting `bench run` measures with
(`bench.measure.monitor.tensors`). See `bench.plan.skeleton` for the parts taken from shapes rather than traced.
"""
