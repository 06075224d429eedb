"""pdes: VICON — vision in-context operator networks for rolling fluid fields forward."""
