package persist

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/control/live"
)

// RedisPersister keeps state under one Redis key shared by replicas.
type RedisPersister struct {
	Client redis.UniversalClient
	Key    string
}

func (r RedisPersister) String() string { return "redis key " + r.Key }

// Load reads the key; a missing key is no state.
func (r RedisPersister) Load(ctx context.Context) (*live.State, error) {
	b, err := r.Client.Get(ctx, r.Key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decode("redis key "+r.Key, b)
}

// Revision reads the first bytes of the key (GETRANGE), not the state.
func (r RedisPersister) Revision(ctx context.Context) (int64, bool, error) {
	head, err := r.Client.GetRange(ctx, r.Key, 0, headSize-1).Bytes()
	if err != nil {
		return 0, false, err
	}
	if len(head) == 0 { // GETRANGE answers "" for a missing key
		return 0, false, nil
	}
	if rev, ok := peekRevision(head); ok {
		return rev, true, nil
	}
	st, err := r.Load(ctx) // not in the usual layout: read it whole
	if err != nil || st == nil {
		return 0, false, err
	}
	return st.Revision, true, nil
}

// saveScript sets the key only if the stored revision is still prev. It
// reads the revision from the value's first bytes (the layout Save
// writes), so a save costs Redis a GETRANGE and a SET, not a decode of
// the whole state; a value in another layout is decoded, and one that is
// not a state is never overwritten (-1).
var saveScript = redis.NewScript(`
local head = redis.call('GETRANGE', KEYS[1], 0, 63)
local rev = 0
if head ~= '' then
  local m = string.match(head, '^%s*{%s*"revision"%s*:%s*(%-?%d+)%s*[,}]')
  if m then
    rev = tonumber(m)
  else
    local ok, st = pcall(cjson.decode, redis.call('GET', KEYS[1]))
    if not (ok and type(st) == 'table' and type(st.revision) == 'number') then return -1 end
    rev = st.revision
  end
end
if rev ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1`)

// Save compares and sets in one script, so two replicas changing at once
// cannot overwrite each other.
func (r RedisPersister) Save(ctx context.Context, st *live.State, prev int64) error {
	b, err := st.Encode()
	if err != nil {
		return err
	}
	ok, err := saveScript.Run(ctx, r.Client, []string{r.Key}, b, prev).Int()
	if err != nil {
		return err
	}
	switch ok {
	case 1:
		return nil
	case -1:
		return fmt.Errorf("redis key %s: %w: refusing to overwrite it", r.Key, ErrNotState)
	}
	return ErrConflict
}
