package r53emu

import "encoding/xml"

// Namespace is the XML namespace of the Route 53 API (version 2013-04-01).
const Namespace = "https://route53.amazonaws.com/doc/2013-04-01/"

// Request bodies, as the SDK sends them.

type xmlChangeRequest struct {
	XMLName     xml.Name       `xml:"ChangeResourceRecordSetsRequest"`
	ChangeBatch xmlChangeBatch `xml:"ChangeBatch"`
}

type xmlChangeBatch struct {
	Comment *string     `xml:"Comment"`
	Changes []xmlChange `xml:"Changes>Change"`
}

type xmlChange struct {
	Action            string       `xml:"Action"`
	ResourceRecordSet xmlRecordSet `xml:"ResourceRecordSet"`
}

// xmlRecordSet is a ResourceRecordSet on the wire. Every element the
// emulator does not model (AliasTarget, Region, Failover, GeoLocation,
// HealthCheckId, ...) lands in Unmodeled, so that it can be refused by
// name rather than ignored.
type xmlRecordSet struct {
	Name            string         `xml:"Name"`
	Type            string         `xml:"Type"`
	SetIdentifier   *string        `xml:"SetIdentifier,omitempty"`
	Weight          *int64         `xml:"Weight,omitempty"`
	TTL             *int64         `xml:"TTL,omitempty"`
	ResourceRecords *xmlRecords    `xml:"ResourceRecords,omitempty"`
	Unmodeled       []xmlUnmodeled `xml:",any"`
}

// xmlUnmodeled is an element the emulator does not model.
type xmlUnmodeled struct {
	XMLName xml.Name
}

type xmlRecords struct {
	Records []xmlRecord `xml:"ResourceRecord"`
}

type xmlRecord struct {
	Value string `xml:"Value"`
}

// Responses.

type xmlChangeInfo struct {
	ID          string  `xml:"Id"`
	Status      string  `xml:"Status"`
	SubmittedAt string  `xml:"SubmittedAt"`
	Comment     *string `xml:"Comment,omitempty"`
}

// xmlChangeResponse answers ChangeResourceRecordSets and GetChange; its
// XMLName says which.
type xmlChangeResponse struct {
	XMLName    xml.Name
	ChangeInfo xmlChangeInfo `xml:"ChangeInfo"`
}

type xmlListRecordsResponse struct {
	XMLName              xml.Name       `xml:"https://route53.amazonaws.com/doc/2013-04-01/ ListResourceRecordSetsResponse"`
	ResourceRecordSets   []xmlRecordSet `xml:"ResourceRecordSets>ResourceRecordSet"`
	IsTruncated          bool           `xml:"IsTruncated"`
	NextRecordName       *string        `xml:"NextRecordName,omitempty"`
	NextRecordType       *string        `xml:"NextRecordType,omitempty"`
	NextRecordIdentifier *string        `xml:"NextRecordIdentifier,omitempty"`
	MaxItems             string         `xml:"MaxItems"`
}

type xmlZoneConfig struct {
	Comment     *string `xml:"Comment,omitempty"`
	PrivateZone bool    `xml:"PrivateZone"`
}

type xmlLinkedService struct {
	ServicePrincipal string  `xml:"ServicePrincipal"`
	Description      *string `xml:"Description,omitempty"`
}

type xmlHostedZone struct {
	ID                     string            `xml:"Id"`
	Name                   string            `xml:"Name"`
	CallerReference        string            `xml:"CallerReference"`
	Config                 xmlZoneConfig     `xml:"Config"`
	ResourceRecordSetCount int64             `xml:"ResourceRecordSetCount"`
	LinkedService          *xmlLinkedService `xml:"LinkedService,omitempty"`
}

type xmlVPC struct {
	VPCRegion string `xml:"VPCRegion"`
	VPCID     string `xml:"VPCId"`
}

type xmlGetZoneResponse struct {
	XMLName    xml.Name      `xml:"https://route53.amazonaws.com/doc/2013-04-01/ GetHostedZoneResponse"`
	HostedZone xmlHostedZone `xml:"HostedZone"`
	VPCs       []xmlVPC      `xml:"VPCs>VPC,omitempty"`
}

type xmlListZonesByNameResponse struct {
	XMLName          xml.Name        `xml:"https://route53.amazonaws.com/doc/2013-04-01/ ListHostedZonesByNameResponse"`
	HostedZones      []xmlHostedZone `xml:"HostedZones>HostedZone"`
	DNSName          *string         `xml:"DNSName,omitempty"`
	HostedZoneID     *string         `xml:"HostedZoneId,omitempty"`
	IsTruncated      bool            `xml:"IsTruncated"`
	NextDNSName      *string         `xml:"NextDNSName,omitempty"`
	NextHostedZoneID *string         `xml:"NextHostedZoneId,omitempty"`
	MaxItems         string          `xml:"MaxItems"`
}

type xmlListZonesResponse struct {
	XMLName     xml.Name        `xml:"https://route53.amazonaws.com/doc/2013-04-01/ ListHostedZonesResponse"`
	HostedZones []xmlHostedZone `xml:"HostedZones>HostedZone"`
	Marker      string          `xml:"Marker"`
	IsTruncated bool            `xml:"IsTruncated"`
	NextMarker  *string         `xml:"NextMarker,omitempty"`
	MaxItems    string          `xml:"MaxItems"`
}

// Errors: the general form, and the one AWS uses for a rejected batch.

type xmlErrorResponse struct {
	XMLName   xml.Name `xml:"https://route53.amazonaws.com/doc/2013-04-01/ ErrorResponse"`
	Error     xmlError `xml:"Error"`
	RequestID string   `xml:"RequestId"`
}

type xmlError struct {
	Type    string `xml:"Type"`
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

type xmlInvalidChangeBatch struct {
	XMLName   xml.Name `xml:"https://route53.amazonaws.com/doc/2013-04-01/ InvalidChangeBatch"`
	Messages  []string `xml:"Messages>Message"`
	RequestID string   `xml:"RequestId"`
}
