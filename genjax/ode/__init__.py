"""ODE integrators the families share: fixed-step solvers (`solvers`) and the
log-density by the instantaneous change of variables (`likelihood`)."""
