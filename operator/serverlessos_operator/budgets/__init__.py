"""ClusterCgroups: a tenant's CPU and memory budget held across nodes."""
