//! The virtio-gpu wire protocol: typed commands and responses, vhost-user and vhost-user-gpu message codes.
