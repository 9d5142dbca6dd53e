"""The TUN device, its host-side netlink setup and the receive-side segment merging."""
