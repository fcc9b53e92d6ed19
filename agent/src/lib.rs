//! The agent: registers with the master, reconciles its desired task set against running tasks, runs them through a ContainerRuntime, serves logs.
