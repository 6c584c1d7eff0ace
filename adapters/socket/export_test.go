package socket

// QueuePeak returns the most frames c's queue has held at once.
func QueuePeak(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peak
}
