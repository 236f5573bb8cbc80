// Command render-manifests writes deploy/manifests/*.yaml: the Helm chart
// rendered with each values file in deploy/manifests/values/ (make
// manifests). Run it from deploy/.
package main

import (
	"fmt"
	"os"

	"github.com/modelsplit/modelsplit/deploy"
)

func main() {
	ms, err := deploy.Manifests(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, m := range ms {
		out, err := deploy.RenderManifest(".", m)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", m.Values, err)
			os.Exit(1)
		}
		if err := os.WriteFile(m.Name, []byte(out), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("wrote", m.Name)
	}
}
