"""plasticity_dynamics.manifolds"""
