package server

import "go.uber.org/zap"

// quietLogger hands go-control-plane's logs to zap with its Info lines
// demoted to Debug: the snapshot cache logs one at Info for every delayed
// delta watch (that is, for every delta ACK) and the sotw server one for
// every stale nonce, which at fleet scale would flood an Info log. Its
// Warn and Error lines (a watch rejected, a response that could not be
// sent) keep their level.
type quietLogger struct{ *zap.SugaredLogger }

func (l quietLogger) Infof(format string, args ...any) { l.Debugf(format, args...) }
