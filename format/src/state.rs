//! The device state model: folds records into resources, contexts, scanouts and fences.
