"""plasticity_dynamics.curvature"""
