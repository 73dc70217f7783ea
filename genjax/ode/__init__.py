"""ODE integrators the families share: fixed-step and adaptive (dopri5)
solvers (`solvers`) and the log-density by the instantaneous change of
variables (`likelihood`)."""
