"""Hardware abstraction layer: robot descriptions (``hardware/*.toml``), backends behind one lifecycle, and the
authenticated remote link. The shield and executor (``robopolicy.hal.shield``, ``robopolicy.hal.executor``) sit
on top; every actuator command passes the shield."""
