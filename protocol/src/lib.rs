//! Wire types shared by master, agent and CLI: typed ids, resources, Marathon DTOs and the agent protocol.
