// Package arch holds no code: its tests check the direction of the import
// arrows between podtls's packages (mains -> controller -> rooms -> shared
// nouns) and that light binaries, such as the podtls CLI, stay light.
package arch
