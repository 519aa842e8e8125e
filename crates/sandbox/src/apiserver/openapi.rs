//! The OpenAPI documents kubectl reads: `/openapi/v2` and `/openapi/v3`, built from the CRD schemas.
