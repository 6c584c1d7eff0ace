package postgres

// PoolConfig is poolConfig, for the tests of the pool's settings.
var PoolConfig = poolConfig
