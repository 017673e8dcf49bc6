module sluice.test/go/kafkago021

go 1.26.0

require github.com/segmentio/kafka-go v0.2.1

require (
	github.com/golang/snappy v1.0.0 // indirect
	github.com/pierrec/lz4 v2.6.1+incompatible // indirect
	golang.org/x/net v0.63.0 // indirect
)
