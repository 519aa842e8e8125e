//! Structural schemas of CustomResourceDefinitions: pruning, defaulting and validation, including CEL rules.
