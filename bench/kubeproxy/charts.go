package main

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// charts draws the full sync time and the new-connection latency against
// the number of services, one line per implementation.
func (s *summary) charts(dir string) error {
	sync := plot.New()
	sync.Title.Text = "Full sync time"
	sync.X.Label.Text = "services"
	sync.Y.Label.Text = "seconds (log)"
	sync.X.Scale, sync.Y.Scale = plot.LogScale{}, plot.LogScale{}
	sync.X.Tick.Marker, sync.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	var lines []any
	for _, impl := range s.impls {
		if impl == implNone {
			continue
		}
		lines = append(lines, impl, s.points(func(n int) float64 { return get(s.fullSync[impl], n) }))
	}
	if err := addLines(sync, lines...); err != nil {
		return err
	}
	if err := save(sync, filepath.Join(dir, "sync.png")); err != nil {
		return err
	}

	lat := plot.New()
	lat.Title.Text = "New TCP connection with a one-byte echo, random service (p50)"
	lat.X.Label.Text = "services"
	lat.Y.Label.Text = "microseconds"
	lat.X.Scale = plot.LogScale{}
	lat.X.Tick.Marker = plot.LogTicks{Prec: -1}
	lat.Y.Min = 0
	lines = lines[:0]
	for _, impl := range s.impls {
		lines = append(lines, impl, s.points(func(n int) float64 { return s.tcp[impl][n]["random"].P50 }))
	}
	if err := addLines(lat, lines...); err != nil {
		return err
	}
	return save(lat, filepath.Join(dir, "latency.png"))
}

func (s *summary) points(f func(n int) float64) plotter.XYs {
	var xy plotter.XYs
	for _, n := range s.ns {
		if v := f(n); !math.IsNaN(v) && v > 0 {
			xy = append(xy, plotter.XY{X: float64(n), Y: v})
		}
	}
	return xy
}

// addLines adds name, points pairs as lines with markers, each
// implementation in its own colour, dash and marker, so that the chart
// reads in grey too.
func addLines(p *plot.Plot, pairs ...any) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		name := pairs[i].(string)
		xy := pairs[i+1].(plotter.XYs)
		if len(xy) == 0 {
			continue
		}
		l, pts, err := plotter.NewLinePoints(xy)
		if err != nil {
			return fmt.Errorf("chart line %s: %w", name, err)
		}
		// The same implementation looks the same in every chart.
		k := slices.Index(allImpls, name)
		c := plotutil.Color(k)
		if name == implNone {
			c = color.Gray{Y: 96}
		}
		l.Color, pts.Color = c, c
		l.Width = vg.Points(1.5)
		l.Dashes = plotutil.Dashes(k)
		pts.Shape = plotutil.Shape(k)
		p.Add(l, pts)
		p.Legend.Add(name, l, pts)
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	return nil
}

func save(p *plot.Plot, path string) error {
	p.X.Padding, p.Y.Padding = vg.Points(4), vg.Points(4)
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Legend.Padding = vg.Points(2)
	if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}
