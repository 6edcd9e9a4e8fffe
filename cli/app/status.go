package app

import "github.com/spf13/cobra"

func newStatus(name string, g *globals, streams IO) *cobra.Command {
	return &cobra.Command{Use: "status", Hidden: true, RunE: func(*cobra.Command, []string) error { return nil }}
}
