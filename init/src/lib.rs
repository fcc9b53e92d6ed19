//! PID 1: boot phases as data (mounts, modules, network, role), supervision, reaping and shutdown.
