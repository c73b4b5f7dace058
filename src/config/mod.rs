//! YAML configuration: schema, `${ENV}` expansion, validation into a resolved `Config`.
