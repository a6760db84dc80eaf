package server

import (
	"embed"
	"io/fs"
	"net/http"
)

// consoleFiles is the web console: static HTML, CSS and JavaScript, no build step and no
// third-party scripts. It talks to the same KVS APIs as any client (POST /listStreams,
// /createStream, /deleteStream, /listFragments, /getHLSStreamingSessionURL, /getClip, /getImages
// for the thumbnails) and plays video with Media Source Extensions fed by the HLS session's fMP4
// init and media fragments.
//
//go:embed console
var consoleFiles embed.FS

// consoleHandler serves the console for GET and HEAD on every path that is not a KVS operation
// or an HLS URL ("/" is index.html). With Credentials set, the console's API calls are unsigned
// and get NotAuthorizedException: the console is for unauthenticated servers.
func consoleHandler() http.HandlerFunc {
	sub, err := fs.Sub(consoleFiles, "console")
	if err != nil {
		panic("server: console files: " + err.Error()) // embedded at build time: cannot fail
	}
	files := http.FileServerFS(sub)
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; media-src 'self' blob:; img-src 'self' data: blob:")
		files.ServeHTTP(w, r)
	}
}
