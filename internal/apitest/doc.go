// Package apitest holds tests over the public API of every package at
// once: properties each exported value type must have, wherever it lives.
package apitest
