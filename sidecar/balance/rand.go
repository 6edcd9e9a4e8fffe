package balance

import "math/rand/v2"

func defaultIntn(n int) int { return rand.IntN(n) }
